DROP TABLE coupon_redemption;
DROP TABLE coupon_validation_rule;
DROP TABLE coupon_usage_limit;
DROP TABLE coupon;
