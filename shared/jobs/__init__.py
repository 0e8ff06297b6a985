"""Bulk jobs of any size on the storage account's tables and queues.

Only the job functions import this package: the HTTP functions never load the storage SDKs.
"""
