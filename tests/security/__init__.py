"""One test per attack of the hardening campaign, each named after the attack it replays."""
