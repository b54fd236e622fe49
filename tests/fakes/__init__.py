"""Fakes of the true network edge (Google: Firebase Auth certificates, later FCM). Nothing else is faked."""
