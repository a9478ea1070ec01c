"""The build stages (plan, fetch, process, shard, assemble), their engines and the build driver."""
