//! SVG line charts drawn by the bench itself (no plotting dependency).
