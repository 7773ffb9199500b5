"""CSV import of work from source-system exports: upload, preview with per-row errors, an
import job with live progress, and its summary."""
