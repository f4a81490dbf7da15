"""HTTP: the Litestar app, its controllers, request/response schemas, problem+json errors,
authentication, idempotency and time travel."""
