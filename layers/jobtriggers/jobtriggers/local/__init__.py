"""The local runtime: moto's DynamoDB server, a stream poller and an HTTP gateway, read from template.yaml.

Never imported by a Lambda handler.
"""
