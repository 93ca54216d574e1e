"""The hub's database: tables, engine and migrations."""
