"""`keygen`: a new Ed25519 key pair for signing receipts (`benchmark --sign-key`, `verify-receipt
--public-key`)."""

from pathlib import Path
from typing import Annotated

import typer

from harness.receipts.signing import generate_keypair, key_id, load_public_key


def register(app: typer.Typer) -> None:
    """Add `keygen` to the top-level app."""
    app.command("keygen")(keygen)


def keygen(
    out: Annotated[
        Path, typer.Option("--out", help="Private key file to write (mode 0600); KEY.pub beside it.")
    ],
) -> None:
    """Write a new Ed25519 private key (PEM, readable by its owner only) and its public key beside it.

    Keep the private key where receipts are made (a CI secret); give the .pub file to whoever verifies.
    """
    private, public = generate_keypair(out)
    typer.echo(f"private key: {private} (keep it secret)")
    typer.echo(f"public key:  {public} (key id {key_id(load_public_key(public))[:16]})")
