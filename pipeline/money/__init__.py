"""The money tools: grants, expiry and reversals, subscriptions, coupons, margins, vendor
prices, the reports finance reads and reconciliation."""
