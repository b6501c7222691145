"""Model families behind one interface (`earmark.models.base.AudioModel`)."""
