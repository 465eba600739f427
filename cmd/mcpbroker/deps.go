package main

import (
	_ "github.com/cedar-policy/cedar-go"
	_ "github.com/cedar-policy/cedar-go/x/exp/schema/validate"
	_ "github.com/cedar-policy/cedar-go/x/exp/batch"
	_ "github.com/google/uuid"
	_ "github.com/mark3labs/mcp-go/client"
	_ "github.com/mark3labs/mcp-go/server"
	_ "github.com/modelcontextprotocol/go-sdk/mcp"
	_ "github.com/spiffe/go-spiffe/v2/workloadapi"
	_ "go.etcd.io/bbolt"
	_ "go.yaml.in/yaml/v3"
)

func main() {}
