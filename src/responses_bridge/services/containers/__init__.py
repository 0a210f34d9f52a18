"""Containers and what the sandbox backs them with: skills, workspaces, package trees and their caches.

Below tools and agents; may use files and tenancy.
"""
