"""Errors a user can fix, and Google's errors turned into them.

Every message says what is wrong and what to do. `launch.__main__` prints a LaunchError's message
alone (no traceback). Google's own messages are kept: they name the project, bucket or API at
fault and never carry a credential.
"""

import contextlib
from collections.abc import Iterator

from beam_preprocess.user_error import UserError

LOGIN_ADVICE = (
    "Run `gcloud auth application-default login` (or set GOOGLE_APPLICATION_CREDENTIALS to a "
    "service-account key file) and try again."
)
ENABLE_APIS_ADVICE = (
    "Check that the project exists, that your account may use it, and that the APIs are "
    "enabled: `gcloud services enable aiplatform.googleapis.com dataflow.googleapis.com "
    "storage.googleapis.com --project=PROJECT`."
)
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


class LaunchError(UserError):
    """A problem the user can fix; the message says how."""


def load_credentials():
    """Application Default Credentials, or a LaunchError saying how to log in."""
    import google.auth
    from google.auth import exceptions as auth_exceptions

    try:
        credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    except auth_exceptions.DefaultCredentialsError as error:
        raise LaunchError(f"No Google Cloud credentials found ({error}).\n{LOGIN_ADVICE}") from None
    return credentials


@contextlib.contextmanager
def explained_cloud_errors(action: str, not_found_hint: str = "") -> Iterator[None]:
    """Turns the errors of Google's clients met while doing `action` into LaunchErrors."""
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    try:
        yield
    except auth_exceptions.DefaultCredentialsError as error:
        raise LaunchError(f"No Google Cloud credentials found ({error}).\n{LOGIN_ADVICE}") from None
    except auth_exceptions.RefreshError as error:
        raise LaunchError(
            f"{action}: Google refused your credentials ({error}); they may have expired.\n"
            f"{LOGIN_ADVICE}"
        ) from None
    except (api_exceptions.PermissionDenied, api_exceptions.Forbidden,
            api_exceptions.Unauthenticated) as error:
        raise LaunchError(f"{action}: permission denied: {error.message}\n"
                          f"{ENABLE_APIS_ADVICE}") from None
    except api_exceptions.NotFound as error:
        raise LaunchError(f"{action}: not found: {error.message}{not_found_hint}") from None
    except api_exceptions.ServiceUnavailable as error:
        raise LaunchError(
            f"{action}: the service could not be reached ({error.message}). Check your network "
            "and that --region names a region where the service runs."
        ) from None
    except api_exceptions.GoogleAPICallError as error:
        raise LaunchError(f"{action} failed: {error.message}") from None
