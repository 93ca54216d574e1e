"""The local bridge: jobs run as process groups on this machine."""
