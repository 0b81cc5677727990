from avatar_edge.openapi_merge import merge_openapi


def doc(paths: dict, schemas: dict) -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "t"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def body_ref(path_item: dict) -> str:
    return path_item["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]


def post(schema_name: str) -> dict:
    return {
        "post": {"requestBody": {"content": {"application/json": {"schema": ref(schema_name)}}}}
    }


def test_every_path_is_kept():
    merged = merge_openapi(
        {"a": doc({"/api/a": {}}, {}), "b": doc({"/api/b": {}, "/api/b/{id}": {}}, {})},
        title="T",
        description="D",
    )
    assert set(merged["paths"]) == {"/api/a", "/api/b", "/api/b/{id}"}
    assert merged["info"]["title"] == "T"


def test_identical_schemas_are_kept_once():
    shared = {"type": "object", "properties": {"code": {"type": "string"}}}
    merged = merge_openapi(
        {"a": doc({}, {"Error": shared}), "b": doc({}, {"Error": dict(shared)})},
        title="T",
        description="D",
    )
    assert list(merged["components"]["schemas"]) == ["Error"]


def test_colliding_schemas_are_renamed_and_references_follow():
    first = {"type": "object", "properties": {"text": {"type": "string"}}}
    second = {"type": "object", "properties": {"image": {"type": "string"}}, "extra": ref("Item")}
    merged = merge_openapi(
        {
            "chat": doc({"/api/chat": post("Item")}, {"Item": first}),
            "gen3d": doc({"/api/generate": post("Item")}, {"Item": second}),
        },
        title="T",
        description="D",
    )
    schemas = merged["components"]["schemas"]
    assert schemas["Item"] == first
    assert schemas["Gen3dItem"]["properties"] == second["properties"]
    # References inside the renamed service's document point at its own schema.
    assert schemas["Gen3dItem"]["extra"] == ref("Gen3dItem")
    assert body_ref(merged["paths"]["/api/chat"]).endswith("/Item")
    assert body_ref(merged["paths"]["/api/generate"]).endswith("/Gen3dItem")


def test_a_schema_pointing_at_a_renamed_one_is_renamed_too():
    item_a = {"type": "object", "properties": {"a": {"type": "string"}}}
    item_b = {"type": "object", "properties": {"b": {"type": "string"}}}
    wrap = {"type": "object", "properties": {"item": ref("Item")}}
    merged = merge_openapi(
        {
            "chat": doc({"/api/chat": post("Wrap")}, {"Item": item_a, "Wrap": wrap}),
            "gen3d": doc({"/api/generate": post("Wrap")}, {"Item": item_b, "Wrap": dict(wrap)}),
        },
        title="T",
        description="D",
    )
    schemas = merged["components"]["schemas"]
    assert schemas["Wrap"]["properties"]["item"] == ref("Item")
    assert schemas["Gen3dWrap"]["properties"]["item"] == ref("Gen3dItem")
    assert body_ref(merged["paths"]["/api/chat"]).endswith("/Wrap")
    assert body_ref(merged["paths"]["/api/generate"]).endswith("/Gen3dWrap")


def test_a_new_name_never_takes_one_the_service_already_uses():
    merged = merge_openapi(
        {
            "other": doc({}, {"Item": {"type": "string"}}),
            "chat": doc({}, {"Item": {"type": "integer"}, "ChatItem": {"type": "boolean"}}),
        },
        title="T",
        description="D",
    )
    schemas = merged["components"]["schemas"]
    assert schemas["Item"] == {"type": "string"}
    assert schemas["ChatItem"] == {"type": "boolean"}
    assert schemas["ChatItem2"] == {"type": "integer"}
