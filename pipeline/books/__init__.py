"""The books: the one PostgreSQL transaction per batch (`transaction`), the reference data
it prices with, the booked-up-to offsets, and the stage clock that times it."""
