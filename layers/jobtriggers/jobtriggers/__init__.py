"""jobtriggers: object types -> triggers -> jobs -> claims, on DynamoDB streams."""

__version__ = "0.1.0"
