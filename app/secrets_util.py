"""High-entropy secrets stored as SHA-256 hashes (fast: auth runs on every request)."""
import hashlib
import hmac
import secrets


def generate(prefix):
    """A new secret: ``prefix`` + 40 URL-safe random characters (240 bits)."""
    return prefix + secrets.token_urlsafe(30)


def digest(secret):
    """The stored form of a secret: hex SHA-256."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def matches(secret, stored_hash):
    """Constant-time check of ``secret`` against a stored hash."""
    return hmac.compare_digest(digest(secret), stored_hash or "")
