"""The contract and the pure core, in the order an event meets them: events and records (the
contract) -> pricing -> deduction -> plan -> rollup. No I/O anywhere in here."""
