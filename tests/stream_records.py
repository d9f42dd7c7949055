"""Reading a table's stream as the event source mapping does, for tests that replay records."""

from __future__ import annotations

from typing import Any

import boto3


def stream_records(table_name: str) -> list[Any]:
    """Every record of the table's stream, all shards, from TRIM_HORIZON."""
    client = boto3.client("dynamodb")
    streams = boto3.client("dynamodbstreams")
    arn = client.describe_table(TableName=table_name)["Table"]["LatestStreamArn"]
    records: list[Any] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            resp = streams.get_records(ShardIterator=iterator)
            records += resp["Records"]
            if not resp["Records"]:
                break
            iterator = resp.get("NextShardIterator")
    return records
