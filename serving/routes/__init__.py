"""The API's routes, one `APIRouter` per group; `serving.app.create_app` includes them."""
