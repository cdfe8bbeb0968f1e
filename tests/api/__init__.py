"""The HTTP API: the app, authentication and authorization, records, models, HTTPS, schemathesis."""
