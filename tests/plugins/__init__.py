"""Third-party-style adapters used by the tests (see vector_adapter.py)."""
