package controller

import (
	"context"
	"testing"

	"github.com/corralhq/corral/internal/origin"
	"github.com/corralhq/corral/model"
)

// Events carry who asked only once the cluster's protocol has FeatureAudit:
// a protocol 2 replica would drop the fields and hold another log.
func TestStampEventWaitsForTheProtocol(t *testing.T) {
	ctx := origin.With(context.Background(), origin.Origin{Actor: "uid 1000", Source: "socket@h1", RequestID: "r1"})
	var e model.Event
	StampEvent(ctx, model.Cluster{Protocol: 2}, &e)
	if e.Actor != "" || e.RequestID != "" {
		t.Fatalf("stamped under protocol 2: %+v", e)
	}
	StampEvent(ctx, model.Cluster{Protocol: 3}, &e)
	if e.Actor != "uid 1000" || e.Source != "socket@h1" || e.RequestID != "r1" {
		t.Fatalf("not stamped under protocol 3: %+v", e)
	}
	var none model.Event
	StampEvent(context.Background(), model.Cluster{Protocol: 3}, &none)
	if none.Actor != "" {
		t.Fatalf("stamped without an origin: %+v", none)
	}
}
