import base64
import hashlib
import hmac

from pipeline.schema.logins import new_password, scram_verifier

# RFC 7677's example exchange: user "user", password "pencil".
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
AUTH_MESSAGE = (
    b"n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,"
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
)


def test_the_verifier_checks_rfc_7677s_example_exchange() -> None:
    verifier = scram_verifier("pencil", SALT)
    scheme, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$")
    assert scheme == "SCRAM-SHA-256" and iterations_salt == "4096:W22ZaJ0SNY7soEsUEjb6gQ=="
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    # The server's signature of the exchange, and the client's proof checked against the
    # stored key, are the RFC's.
    signature = hmac.digest(server_key, AUTH_MESSAGE, "sha256")
    assert base64.b64encode(signature) == b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_key = bytes(
        a ^ b for a, b in zip(proof, hmac.digest(stored_key, AUTH_MESSAGE, "sha256"), strict=True)
    )
    assert hashlib.sha256(client_key).digest() == stored_key


def test_generated_passwords_are_long_and_new() -> None:
    passwords = {new_password() for _ in range(100)}
    assert len(passwords) == 100 and all(len(p) == 32 for p in passwords)
