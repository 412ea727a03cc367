-- Credit liability (issue 17, `report credits`, `report html`): finance reads what the
-- outstanding credits are made of, by source type and by when they expire. The sources
-- hold no more than the credit ledger finance already reads (who was granted how much).
GRANT SELECT ON user_credit_source TO finance_reader;
