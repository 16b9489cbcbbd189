"""The action shell: turns detector alerts into deduplicated, grouped,
signed notifications for customer-service teams, tracks their lifecycle, and
keeps the auditable compensation-liability ledger."""
