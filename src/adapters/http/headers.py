"""Headers every request of the worker's to an HTTP API carries."""

JSON = {"Content-Type": "application/json"}


def authorization(token: str | None) -> dict[str, str]:
    """`Authorization: Bearer <token>` when there is a token; the value is a secret."""
    return {"Authorization": f"Bearer {token}"} if token else {}
