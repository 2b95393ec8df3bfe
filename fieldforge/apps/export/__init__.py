"""A trained run out of fieldforge: meshes, point clouds, 3DGS .ply files and camera-path videos."""
