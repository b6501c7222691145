"""Where audio comes from: listing folders, prefixes and globs, and reading manifests."""
