"""The hub's rules, independent of HTTP: jobs, accounts, compute clients."""
