DROP TABLE proration_event;
DROP TABLE billing_invoice;
DROP TABLE credit_allocation;
DROP TABLE subscription_monetization;
