DROP TABLE gateway_user_links;
