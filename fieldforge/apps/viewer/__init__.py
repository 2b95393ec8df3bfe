"""The browser viewer (viser): server, camera paths, and the render path it draws frames with."""
