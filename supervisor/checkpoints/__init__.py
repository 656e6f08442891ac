"""Everything about checkpoint files: versions on disk, watching, verdicts, planning, quarantine, copies."""
