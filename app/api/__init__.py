"""The JSON API (/api/v1), its tokens and its OpenAPI document."""
