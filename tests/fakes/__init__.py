"""Fakes of the true network edge (Google: Firebase Auth certificates, FCM, Google Play). Nothing else
is faked."""
