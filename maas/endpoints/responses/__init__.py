"""Stored responses of the Responses API: kept on shared storage, read by any ingress replica."""
