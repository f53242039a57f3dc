"""OCI: references, media types, content-addressed blob storage, layouts, client, server."""
