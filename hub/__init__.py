"""Pairio hub: FastAPI service holding users, services, apps, compute clients and jobs."""
