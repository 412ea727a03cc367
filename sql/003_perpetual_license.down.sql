DROP TABLE perpetual_license;
