"""The business REST API (/v1): django-ninja routers that translate HTTP to the same services and
selectors GraphQL calls, for organizations' API keys. Errors are RFC 9457 problem details (problems.py)."""
