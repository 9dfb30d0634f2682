package main

import (
	"context"
	"fmt"
	"net/url"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

// objectAPI is how one resource type maps to Cloudflare API calls, the same calls the Terraform
// provider makes for it.
type objectAPI interface {
	create(ctx context.Context, c *client, r *resourceType, inputs resource.PropertyMap) (string, map[string]any, error)
	// read answers errNotFound (or a 404 apiError) when the object no longer exists.
	read(ctx context.Context, c *client, r *resourceType, id string, known resource.PropertyMap) (map[string]any, error)
	update(ctx context.Context, c *client, r *resourceType, id string, inputs resource.PropertyMap) (map[string]any, error)
	delete(ctx context.Context, c *client, r *resourceType, id string, known resource.PropertyMap) error
	// scopeKeys are the inputs naming where the object lives, in the order an import id gives them
	// ("<account id>/<object id>").
	scopeKeys() []string
	// idKey is the input that is also the object's id, if any (a configuration's tunnel).
	idKey() string
}

// restAPI: a collection under an account or a zone, POST to create, GET/PUT-or-PATCH/DELETE on
// collection/{id}.
type restAPI struct {
	scope        string // the input holding the account or zone id
	scopeSegment string // "accounts" or "zones"
	collection   string
	updateMethod string // PUT (replace the object) or PATCH (change the fields sent)
	notPatched   []string
	gone         func(result map[string]any) bool // an answer that means the object is deleted
}

func (a *restAPI) scopeKeys() []string { return []string{a.scope} }
func (a *restAPI) idKey() string       { return "" }

func (a *restAPI) collectionPath(known resource.PropertyMap) (string, error) {
	scope, ok := stringInput(known, a.scope)
	if !ok {
		return "", fmt.Errorf("%s is not known", a.scope)
	}
	return fmt.Sprintf("%s/%s/%s", a.scopeSegment, url.PathEscape(scope), a.collection), nil
}

func (a *restAPI) create(ctx context.Context, c *client, r *resourceType, inputs resource.PropertyMap) (string, map[string]any, error) {
	path, err := a.collectionPath(inputs)
	if err != nil {
		return "", nil, err
	}
	result, err := c.call(ctx, "POST", path, requestBody(r.schema, inputs))
	if err != nil {
		return "", nil, err
	}
	id, _ := result["id"].(string)
	if id == "" {
		return "", nil, fmt.Errorf("Cloudflare API POST %s answered without an id", path)
	}
	return id, result, nil
}

func (a *restAPI) read(ctx context.Context, c *client, r *resourceType, id string, known resource.PropertyMap) (map[string]any, error) {
	path, err := a.collectionPath(known)
	if err != nil {
		return nil, err
	}
	result, err := c.call(ctx, "GET", path+"/"+url.PathEscape(id), nil)
	if err != nil {
		return nil, err
	}
	if a.gone != nil && a.gone(result) {
		return nil, errNotFound
	}
	return result, nil
}

func (a *restAPI) update(ctx context.Context, c *client, r *resourceType, id string, inputs resource.PropertyMap) (map[string]any, error) {
	path, err := a.collectionPath(inputs)
	if err != nil {
		return nil, err
	}
	var omit []string
	if a.updateMethod == "PATCH" {
		omit = a.notPatched
	}
	return c.call(ctx, a.updateMethod, path+"/"+url.PathEscape(id), requestBody(r.schema, inputs, omit...))
}

func (a *restAPI) delete(ctx context.Context, c *client, r *resourceType, id string, known resource.PropertyMap) error {
	path, err := a.collectionPath(known)
	if err != nil {
		return err
	}
	_, err = c.call(ctx, "DELETE", path+"/"+url.PathEscape(id), nil)
	if isNotFound(err) {
		return nil // already gone: what a delete wants
	}
	return err
}

// tunnelConfigurationAPI: a remotely managed tunnel's configuration is PUT (created and updated
// alike) and read at accounts/{account}/cfd_tunnel/{tunnel}/configurations; its id is the tunnel's.
// The API has no DELETE for it: as the Terraform provider does, deleting only forgets it (it goes
// when its tunnel is deleted).
type tunnelConfigurationAPI struct{}

func (tunnelConfigurationAPI) scopeKeys() []string { return []string{"accountId"} }
func (tunnelConfigurationAPI) idKey() string       { return "tunnelId" }

func (tunnelConfigurationAPI) path(known resource.PropertyMap, id string) (string, error) {
	account, ok := stringInput(known, "accountId")
	if !ok {
		return "", fmt.Errorf("accountId is not known")
	}
	if id == "" {
		if id, ok = stringInput(known, "tunnelId"); !ok {
			return "", fmt.Errorf("tunnelId is not known")
		}
	}
	return fmt.Sprintf("accounts/%s/cfd_tunnel/%s/configurations", url.PathEscape(account), url.PathEscape(id)), nil
}

func (t tunnelConfigurationAPI) create(ctx context.Context, c *client, r *resourceType, inputs resource.PropertyMap) (string, map[string]any, error) {
	path, err := t.path(inputs, "")
	if err != nil {
		return "", nil, err
	}
	result, err := c.call(ctx, "PUT", path, requestBody(r.schema, inputs))
	if err != nil {
		return "", nil, err
	}
	id, _ := stringInput(inputs, "tunnelId")
	return id, result, nil
}

func (t tunnelConfigurationAPI) read(ctx context.Context, c *client, r *resourceType, id string, known resource.PropertyMap) (map[string]any, error) {
	path, err := t.path(known, id)
	if err != nil {
		return nil, err
	}
	return c.call(ctx, "GET", path, nil)
}

func (t tunnelConfigurationAPI) update(ctx context.Context, c *client, r *resourceType, id string, inputs resource.PropertyMap) (map[string]any, error) {
	path, err := t.path(inputs, id)
	if err != nil {
		return nil, err
	}
	return c.call(ctx, "PUT", path, requestBody(r.schema, inputs))
}

func (tunnelConfigurationAPI) delete(context.Context, *client, *resourceType, string, resource.PropertyMap) error {
	return nil
}
