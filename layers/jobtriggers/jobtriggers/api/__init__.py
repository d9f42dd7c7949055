"""The sites' HTTP API: Powertools resolvers, routes, the error mapping and request authentication."""
