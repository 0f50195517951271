"""Data files shipped with the package (hash manifests)."""
