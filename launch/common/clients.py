"""Clients of Vertex AI's regional endpoints (needs the `cloud` extra)."""

from __future__ import annotations


def regional_client(client_class, region: str, credentials):
    """A Vertex AI client (e.g. aiplatform_v1.JobServiceClient) of `region`'s endpoint, where
    that region's jobs, models and endpoints live."""
    return client_class(credentials=credentials,
                        client_options={"api_endpoint": f"{region}-aiplatform.googleapis.com"})
