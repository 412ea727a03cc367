REVOKE ALL ON consumer_offsets FROM pipeline_writer;
DROP TABLE consumer_offsets;
