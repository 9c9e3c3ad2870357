#!/bin/bash
# COPY of the seed's scripts/check-backups.sh (seed 000, "8. Backup Monitoring Script") for
# tests/seeds.rs. Verbatim except this adaptation (nothing else differs from the seed):
#   A5 `stat -f %m` (BSD/macOS) -> `stat -c %Y` (GNU/Linux: the same mtime in epoch seconds).
# check-backups.sh - Verify backup health

BACKUP_DIR="./backups"
MAX_AGE_HOURS=25  # Alert if newest backup is older than 25 hours

echo "=== Backup Health Check ==="
echo

# Check if backup directory exists
if [ ! -d "$BACKUP_DIR" ]; then
  echo "âŒ ERROR: Backup directory not found: $BACKUP_DIR"
  exit 1
fi

# Count backups
BACKUP_COUNT=$(find "$BACKUP_DIR" -name "claude-backup-*.tar.gz" | wc -l)
echo "ðŸ“¦ Total backups: $BACKUP_COUNT"

if [ $BACKUP_COUNT -eq 0 ]; then
  echo "âŒ ERROR: No backups found!"
  exit 1
fi

# Check newest backup age
NEWEST_BACKUP=$(ls -t "$BACKUP_DIR"/claude-backup-*.tar.gz 2>/dev/null | head -1)
if [ -n "$NEWEST_BACKUP" ]; then
  BACKUP_AGE_SECONDS=$(( $(date +%s) - $(stat -c %Y "$NEWEST_BACKUP") ))
  BACKUP_AGE_HOURS=$(( BACKUP_AGE_SECONDS / 3600 ))

  echo "ðŸ“… Newest backup: $(basename "$NEWEST_BACKUP")"
  echo "â° Age: ${BACKUP_AGE_HOURS} hours"

  if [ $BACKUP_AGE_HOURS -gt $MAX_AGE_HOURS ]; then
    echo "âš ï¸  WARNING: Newest backup is older than $MAX_AGE_HOURS hours!"
    exit 1
  else
    echo "âœ… Backup age is acceptable"
  fi
fi

# Check total backup size
TOTAL_SIZE=$(du -sh "$BACKUP_DIR" | cut -f1)
echo "ðŸ’¾ Total backup size: $TOTAL_SIZE"

# List recent backups
echo
echo "ðŸ“‹ Recent backups:"
ls -lh "$BACKUP_DIR"/claude-backup-*.tar.gz | tail -5 | awk '{print $9, "("$5")"}'

# Verify a backup can be listed (not corrupted)
echo
echo "ðŸ” Verifying newest backup integrity..."
if tar -tzf "$NEWEST_BACKUP" > /dev/null 2>&1; then
  echo "âœ… Backup archive is valid"
else
  echo "âŒ ERROR: Backup archive may be corrupted!"
  exit 1
fi

echo
echo "=== Backup health check complete ==="
exit 0
