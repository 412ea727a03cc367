"""The demo's users and their books, and the sample gateway traffic it publishes."""
