"""The offline demo: synthetic media served on 127.0.0.1 and built through yt-dlp."""
