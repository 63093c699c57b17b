"""Shards: pack them once (pack.py, sources/, imaging.py, shard_writer.py), then read and stream
them (shardset.py, tar_reader.py; stream.py's two loaders over samples.py, decode.py and loader.py)
with the attributes their samples record (attributes.py) and balanced streams (balance.py).

A docstring only, on purpose: a face that re-exported stream.py would load torch and
torchvision into every pack worker."""
