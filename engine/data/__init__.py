"""The output's layout: sources and inputs, table schemas, shards, manifest and commits, lease, storage, samples."""
