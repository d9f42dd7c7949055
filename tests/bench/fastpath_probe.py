"""Run by test_bench_smoke in a fresh interpreter: moto with bench.moto_fastpath, one good tag and one
cancelled (the object does not exist). Prints what the tables and the stream hold afterwards."""

from __future__ import annotations

import json
import os

from botocore.exceptions import ClientError

from bench import moto_fastpath
from bench.common import TAG_TYPE, quiet_lambda_environment


def main() -> None:
    quiet_lambda_environment()
    moto_fastpath.install()
    import boto3

    from jobtriggers.dal.dynamo import dynamodb, to_item
    from jobtriggers.local.store import create_tables, point_boto3_at, start_embedded_dynamo, stream_arn

    server = start_embedded_dynamo()
    try:
        point_boto3_at(server.endpoint)
        env = create_tables("fastpath")
        objects, types = env["OBJECTS_TABLE"], env["OBJECT_TYPES_TABLE"]
        dynamodb().put_item(TableName=objects, Item=to_item({"pk": "object#there"}))

        def tag(object_id: str) -> None:
            dynamodb().transact_write_items(
                TransactItems=[
                    {
                        "ConditionCheck": {
                            "TableName": objects,
                            "Key": to_item({"pk": f"object#{object_id}"}),
                            "ConditionExpression": "attribute_exists(pk)",
                        }
                    },
                    {
                        "Put": {
                            "TableName": types,
                            "Item": to_item({"object_id": object_id, "object_type_id": TAG_TYPE}),
                        }
                    },
                ]
            )

        tag("there")
        error = ""
        try:
            tag("missing")
        except ClientError as exc:
            error = exc.response["Error"]["Code"]
        count = dynamodb().scan(TableName=types, Select="COUNT")["Count"]
        streams = boto3.client("dynamodbstreams")
        arn = stream_arn(types)
        shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
        iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
        records = streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
        print(json.dumps({"error": error, "assignments": count, "stream_records": len(records)}))
    finally:
        server.stop()
        os._exit(0)  # moto's server threads must not keep the interpreter alive


if __name__ == "__main__":
    main()
