"""Beam against a local GCS emulator, without a 30 s hunt for Google credentials.

With STORAGE_EMULATOR_HOST set, google-cloud-storage talks to the emulator anonymously, but
Beam's GCS I/O first asks google.auth for default credentials and retries (~30 s) before it
gives up. The emulator needs none, so when (and only when) that variable is set we tell Beam's
credential cache that the lookup is done and found nothing. On Google Cloud the variable is
never set and real authentication is untouched.
"""

import os

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"


def skip_credential_lookup_when_emulated() -> bool:
    """Marks Beam's GCS credentials as 'none' when an emulator is configured. Returns whether."""
    if not os.environ.get(EMULATOR_ENV):
        return False
    try:
        from apache_beam.internal.gcp import auth
    except ImportError:  # Beam without the gcp extra has no GCS I/O to configure.
        return False
    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials = None
        auth._Credentials._credentials_init = True
    return True
