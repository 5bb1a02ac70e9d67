"""``ENGINE: "fastpool.django.mysql"``: Django's MySQL/MariaDB backend, pooled by fastpool."""
